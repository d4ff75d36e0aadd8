"""The baseline of scripts/perf-compare.sh: Flask-Restless 0.17 + SQLAlchemy over
the same tables and data as the Rust API, the kind of stack the original
SMARTSolar ran on.

Served by gunicorn (5 sync workers) from the virtualenv that perf-compare.sh
builds with pinned versions. Configured by environment:

  BASELINE_DATABASE_URL  SQLAlchemy URL (sqlite:////path/db or postgresql://...)
  BASELINE_TOKEN_CACHE   seconds a verified token is kept per worker (0 = none)

Routes: GET /v1/products, GET /v1/products/<imei>, POST /v1/entities, the
same paths, query language (`q`), page size and list envelope as ours. Every
request needs `Authorization: Token token=<token>` of a token issued by the
Rust API's /v1/auth/login: the SHA-256 of it is looked up in the same
api_token table, as ours does.
"""

import hashlib
import inspect
import os
import time
from datetime import datetime

# Flask-Restless 0.17 (2015) calls inspect.getargspec, removed in Python 3.11;
# getfullargspec answers the same `.args` it reads.
if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec

import flask_restless  # noqa: E402
from flask import Flask, request  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy import text  # noqa: E402

app = Flask("smartsolar_baseline")
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["BASELINE_DATABASE_URL"]
app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
db = SQLAlchemy(app)
CACHE_SECS = float(os.environ.get("BASELINE_TOKEN_CACHE", "0"))
_tokens = {}  # sha256 hex -> (checked_at, user_id)


def reflected(table_name, *overrides):
    """A model over an existing table, columns only: no relationships, so the
    JSON carries the same fields as ours."""
    with app.app_context():
        table = db.Table(
            table_name,
            db.metadata,
            *overrides,
            autoload=True,
            autoload_with=db.engine,
            # Already there when a reflected foreign key pulled it in.
            extend_existing=True,
        )
    return type(table_name.title(), (db.Model,), {"__table__": table})


Product = reflected("product")
# SQLAlchemy 1.3 does not reflect PostgreSQL identity columns as generated: say so.
Entity = reflected("entity", db.Column("entity_id", db.BigInteger, primary_key=True, autoincrement=True))


def authenticate(**_kw):
    header = request.headers.get("Authorization", "")
    token = header.partition("token=")[2]
    if not token:
        raise flask_restless.ProcessingException(description="Not authorized", code=401)
    digest = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    hit = _tokens.get(digest)
    if hit and now - hit[0] < CACHE_SECS:
        return
    row = db.session.execute(
        text(
            "SELECT u.user_id FROM api_token t JOIN \"user\" u ON u.user_id = t.user_id "
            "WHERE t.token_hash = :h AND t.expires_at > :now"
        ),
        {"h": digest, "now": datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")},
    ).first()
    if row is None:
        raise flask_restless.ProcessingException(description="Not authorized", code=401)
    if CACHE_SECS > 0:
        _tokens[digest] = (now, row[0])


def stamp_created(data=None, **_kw):
    data["created_at"] = datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")
    data["created_by"] = "perf"


auth = {"GET_SINGLE": [authenticate], "GET_MANY": [authenticate], "POST": [authenticate]}
manager = flask_restless.APIManager(app, flask_sqlalchemy_db=db)
manager.create_api(
    Product, methods=["GET"], url_prefix="/v1", collection_name="products", preprocessors=auth
)
manager.create_api(
    Entity,
    methods=["GET", "POST"],
    url_prefix="/v1",
    collection_name="entities",
    preprocessors={**auth, "POST": [authenticate, stamp_created]},
)
