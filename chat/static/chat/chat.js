// The live chat client arrives with the web-chat issue.
