"""Sans-IO RobE transport (issue 4): frames and RFC 8684 cryptography so far; no sockets here."""
