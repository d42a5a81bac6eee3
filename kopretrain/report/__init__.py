"""`kopretrain report`: a sweep's comparison (collect -> rows -> markdown table + trade-off plot)."""
