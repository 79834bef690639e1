"""The IMAP edge: the notification mailbox, over imapclient."""
