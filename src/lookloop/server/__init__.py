"""HTTP and WebSocket API, and the pages the app serves."""
