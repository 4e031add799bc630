"""The payer mini-portal's routes: a tokenized page per customer."""
