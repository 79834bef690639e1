"""One pass of the loop: read mail, download and archive, acknowledge; and submissions."""
