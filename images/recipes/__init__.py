"""Recipes: each turns locked Debian packages (and guest-side sources) into one store entry."""
