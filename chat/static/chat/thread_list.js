// The thread list: deleting a thread, after a confirmation, through DELETE /api/threads/<id>/.

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function deleteThread(button) {
  const title = button.dataset.title || "this thread";
  if (!window.confirm(`Delete "${title}" with all its messages? This cannot be undone.`)) return;
  button.disabled = true;
  let response;
  try {
    response = await fetch(`/api/threads/${button.dataset.threadId}/`, {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    });
  } catch (error) {
    button.disabled = false;
    window.alert(`Could not delete the thread: ${error.message}`);
    return;
  }
  if (response.status === 204 || response.status === 404) {
    const item = button.closest("li");
    if (item) item.remove();
    return;
  }
  button.disabled = false;
  const body = await response.json().catch(() => ({}));
  const message = body.error ? body.error.message : `HTTP ${response.status}`;
  window.alert(`Could not delete the thread: ${message}`);
}

for (const button of document.querySelectorAll("button.delete-thread")) {
  button.addEventListener("click", () => deleteThread(button));
}
