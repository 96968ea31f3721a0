"""The HTTP API: thin routes over `tollgate_server.services`."""
