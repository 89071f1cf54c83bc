"""PostGIS feature layers: models, spatial queries, migrations and the private cluster."""
