"""Database layer: the only package that imports psycopg."""
