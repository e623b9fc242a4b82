"""Tools around the project: the wheelhouse for an offline accelerator machine."""
