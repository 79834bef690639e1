"""A throwaway Courier-IMAP on loopback: the second server implementation the tests run."""
