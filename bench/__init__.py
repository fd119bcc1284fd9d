"""Side-by-side benchmarks of netra-chat, a bare Channels consumer and a raw websockets server."""
