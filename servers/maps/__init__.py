"""Maps: geocoding and reverse geocoding of OpenStreetMap addresses, streets and POIs and GeoNames places."""
