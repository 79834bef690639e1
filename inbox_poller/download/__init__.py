"""The download edge: fetch an allow-listed HTTPS payload safely and validate it."""
