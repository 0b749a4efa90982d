"""Core pieces every stage and command shares."""
