"""The server's rules, one service per idea; they know neither HTTP nor SQL."""
