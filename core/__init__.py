"""Pieces every app may use and that know no app: the error type, the Redis client, the logger."""
