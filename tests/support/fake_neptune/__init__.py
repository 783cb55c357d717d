"""Fake Neptune servers (2.x and 3.x protocols) that the real clients talk to, on 127.0.0.1."""
