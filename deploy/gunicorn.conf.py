"""gunicorn's settings for Coalition in production, behind nginx (deploy/nginx/coalition.conf):

    gunicorn -c deploy/gunicorn.conf.py 'coalition.app:create_app()'

Options given on the command line win over these (``-b 10.0.0.5:8000``, ``-w 8``).
"""

import multiprocessing

# only nginx talks to gunicorn: on the app host's own address, never the public one
bind = "127.0.0.1:8000"

# gunicorn's rule of thumb, (2 x cores) + 1 processes, each serving 4 requests at once on
# threads: a request mostly waits for PostgreSQL. Each process keeps its own database pool
# (COALITION_DB_POOL_SIZE + COALITION_DB_MAX_OVERFLOW connections): size PostgreSQL for
# workers x hosts x that. Slow clients are nginx's business: it hands over whole requests.
workers = 2 * multiprocessing.cpu_count() + 1
worker_class = "gthread"
threads = 4

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
