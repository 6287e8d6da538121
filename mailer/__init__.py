"""mailer: delivery worker for transaction receipts and newsletters."""
