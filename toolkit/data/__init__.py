"""Readers and generators that produce the canonical AnnData (raw counts, obs cell type, obsm spatial)."""
