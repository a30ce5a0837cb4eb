"""The outbox and the email log: what the rows say, on every database."""
