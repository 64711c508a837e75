"""HTTP and websocket routes, versioned under /v1."""
