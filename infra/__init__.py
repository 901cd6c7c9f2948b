"""What Geoplex stands on, locally: the backends (``local``), real datasets (``data``) and
the one way child processes are run (``process``).

Nothing here imports the server runtime (``geoplex.servers``); the operator tools
(``geoplex.tools``) join the two.
"""
