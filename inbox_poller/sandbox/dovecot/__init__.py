"""A throwaway Dovecot on loopback, for the sandbox and the tests."""
