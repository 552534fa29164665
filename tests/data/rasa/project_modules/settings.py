"""A module of the project folder, beside domain.yml (a project's config.py or database.py)."""

SHOP_NAME = "the Corner Shop"
HOURS = "from 9 to 5"
