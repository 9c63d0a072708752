"""Set-up shared by every trainer (data loading, ...); nothing here is specific to one stage."""
