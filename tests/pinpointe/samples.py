"""Answers a misbehaving server gives, shared by the envelope and the client tests."""

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
