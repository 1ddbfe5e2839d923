"""gunicorn's settings for Coalition in production, behind nginx (deploy/nginx/coalition.conf):

    gunicorn -c deploy/gunicorn.conf.py 'coalition.app:create_app()'

Options given on the command line win over these (``-b 10.0.0.5:8000``, ``-w 8``).
"""

import multiprocessing

# only nginx talks to gunicorn: on the app host's own address, never the public one
bind = "127.0.0.1:8000"

# one process per core, each serving 8 requests at once on threads: a request is Python
# (one core per process, under the GIL) that mostly waits for PostgreSQL, and psycopg lets
# other threads run meanwhile. Measured against sync workers and more processes in
# docs/benchmarks.md ("Why gunicorn gthread"). Each process keeps its own database pool:
# keep COALITION_DB_POOL_SIZE at least `threads`, and size PostgreSQL for
# processes x hosts x (COALITION_DB_POOL_SIZE + COALITION_DB_MAX_OVERFLOW).
# Slow clients are nginx's business: it hands over whole requests only.
workers = multiprocessing.cpu_count()
worker_class = "gthread"
threads = 8
# one listening socket per worker, so that the kernel spreads connections evenly (with one
# shared socket a gthread worker takes every connection it can grab). The price: connections
# still queued on a worker's socket when that worker exits (a restart, a timeout) are reset;
# nginx answers those 503 with Retry-After, and a partner's retry is safe (partner_txn_id).
reuse_port = True

# a worker that does not report for 30 s is killed and replaced; a stop or reload lets
# requests in flight finish for up to 30 s
timeout = 30
graceful_timeout = 30
# longer than nginx keeps an idle upstream connection (60 s), so that gunicorn never closes
# one that nginx is about to reuse
keepalive = 75

# the X-Forwarded-Proto of these addresses says whether the client spoke TLS; the
# application believes X-Forwarded-For from COALITION_TRUSTED_PROXIES only
forwarded_allow_ips = "127.0.0.1,::1"

# the application writes its own access line (coalition.access)
accesslog = None
