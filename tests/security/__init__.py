"""Security regression tests: a real master driven over HTTP as a hostile user would."""
