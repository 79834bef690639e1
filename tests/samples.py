"""Sample inputs several test rooms share."""

MINIMAL = """
[pinpointe]
username = "u@example.com"
usertoken_env = "TOKEN_VAR"
notify_email = "box@example.com"

[imap]
host = "imap.example.com"
username = "box@example.com"
password_env = "PASSWORD_VAR"
"""
"""The smallest valid configuration: the required keys, secrets from the environment."""
