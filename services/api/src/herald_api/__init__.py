"""Herald's HTTP API: accepts notifications, reports on them, and manages dead letters."""
