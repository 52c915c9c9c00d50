"""What the sink process serves over HTTP: the dashboard, the query API, the SQL
endpoint, and the HTTP plumbing they share (API token, server thread)."""
