"""Every way of producing a profile: finding nsys (discover), running it (run), turning captures into
SQLite (export), capturing one process (launch) or a server in a window under load (serve, load)."""
