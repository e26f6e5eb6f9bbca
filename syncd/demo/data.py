"""A small data set shaped like the seed's application (VALKYRIA ECM, Rails + Mongoid).

Organizations, roles, users with Devise bcrypt hashes (the three reset users among them),
templates whose .docx lives in GridFS, contracts and an audit trail.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
from bson import ObjectId
from gridfs import GridFSBucket
from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

RESET_USERS = ("hectorneira2005@hotmail.com", "legal@valkyria.com", "admin@valkyria.com")
_PEOPLE = (
    ("Camila", "Rojas"),
    ("Matías", "González"),
    ("Valentina", "Muñoz"),
    ("Benjamín", "Soto"),
    ("Isidora", "Contreras"),
)
_TEMPLATES = ("Contrato de trabajo", "Anexo de contrato", "Certificado de antigüedad")
_START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _hash(password: str) -> str:
    # Cost 4: the data set's own passwords only need to be valid Devise hashes, not slow ones.
    salt = bcrypt.gensalt(rounds=4, prefix=b"2a")
    return str(bcrypt.hashpw(password.encode(), salt).decode("ascii"))


def _users(rng: random.Random, org: ObjectId, roles: list[ObjectId]) -> list[dict[str, Any]]:
    names = [("Héctor", "Neira"), ("Legal", "Valkyria"), ("Admin", "Valkyria"), *_PEOPLE]
    emails = [*RESET_USERS] + [f"{f.lower()}.{n.lower()}@valkyria.com" for f, n in _PEOPLE]
    return [
        {
            "_id": ObjectId(),
            "email": email,
            "first_name": first,
            "last_name": last,
            "encrypted_password": _hash(f"old-password-{i}"),
            "organization_id": org,
            "role_id": rng.choice(roles),
            "sign_in_count": rng.randrange(1, 300),
            "created_at": _START + timedelta(days=i),
        }
        for i, (email, (first, last)) in enumerate(zip(emails, names, strict=True))
    ]


def _templates(db: Database[Any], rng: random.Random, org: ObjectId) -> list[dict[str, Any]]:
    bucket = GridFSBucket(db)
    docs = []
    for i, name in enumerate(_TEMPLATES):
        content = b"PK\x03\x04" + rng.randbytes(300_000 if i == 0 else 20_000)
        file_id = bucket.upload_from_stream(
            f"template_{i}.docx", content, metadata={"content_type": "application/docx"}
        )
        docs.append(
            {"_id": ObjectId(), "name": name, "file_id": file_id, "organization_id": org}
            | {"variables": ["nombre", "rut", "fecha"], "version": 1, "active": True}
        )
    return docs


def load_demo_data(db: Database[Any], seed: int = 8) -> dict[str, int]:
    """Fill an empty database; returns the document count of each collection."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    org_id = ObjectId()
    org: dict[str, Any] = {"_id": org_id, "name": "Valkyria S.A.", "slug": "valkyria"}
    role_ids = [ObjectId() for _ in range(4)]
    role_names = ("admin", "legal", "rrhh", "usuario")
    roles = [{"_id": i, "name": n} for i, n in zip(role_ids, role_names, strict=True)]
    users = _users(rng, org_id, role_ids)
    templates = _templates(db, rng, org_id)
    contracts = [
        {
            "_id": ObjectId(),
            "number": f"CT-2025-{i:04d}",
            "user_id": rng.choice(users)["_id"],
            "template_id": rng.choice(templates)["_id"],
            "status": rng.choice(["draft", "signed", "expired"]),
            "clauses": [{"n": n, "text": f"Cláusula {n}"} for n in range(1, 4)],
        }
        for i in range(1, 13)
    ]
    audit = [
        {
            "_id": ObjectId(),
            "actor_id": rng.choice(users)["_id"],
            "action": rng.choice(["login", "update", "download", "sign"]),
            "created_at": _START + timedelta(hours=i),
        }
        for i in range(40)
    ]
    data: dict[str, list[dict[str, Any]]] = {
        "organizations": [org],
        "roles": roles,
        "users": users,
        "templates": templates,
        "legal_contracts": contracts,
        "audit_events": audit,
    }
    for name, docs in data.items():
        db[name].insert_many(docs)
    db.users.create_indexes([IndexModel([("email", ASCENDING)], unique=True)])
    db.legal_contracts.create_indexes([IndexModel([("number", ASCENDING)], unique=True)])
    names = [*data, "fs.files", "fs.chunks"]
    return {name: db[name].count_documents({}) for name in names}
