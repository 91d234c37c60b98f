"""Who may watch and do what: signed URLs and API tokens. Pure."""
