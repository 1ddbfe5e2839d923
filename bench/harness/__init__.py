"""What every Coalition benchmark needs and no scenario owns.

* ``processes``: the processes a run starts (and stops, on error and Ctrl-C too), the one
  stop flag every loop checks, the commands it runs;
* ``cpu``: CPU used by the server processes, the PostgreSQL backends and the machine, read
  from ``/proc``, and its arithmetic (per cent of a core, milliseconds per request);
* ``client``: one keep-alive HTTP/1.1 client connection and the OAuth token request;
* ``load``: closed-loop clients in threads and processes, latency percentiles, outcomes;
* ``postgres``: the benchmark's databases, their statistics counters, pgbench's environment;
* ``gunicorn``: the application server under test;
* ``pgbench``: PostgreSQL's own TPC-B-like yardstick;
* ``profile``: py-spy recordings of the server's workers and their summary;
* ``report``: the machine's facts and the printed report.
"""
