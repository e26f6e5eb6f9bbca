"""A realistic, deterministic data set shaped like the seed's application (VALKYRIA ECM).

Rails + Mongoid document management: the 21 collections of the seed's "Available
Collections" table, ObjectId references between them, Devise bcrypt hashes, nested
contracts, GridFS files (one spanning several chunks) and the kinds of indexes such an
app has (unique, compound, partial, TTL). Same `seed` and `scale`, same bytes, so two
loads into two databases compare equal.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from tests.support.dataset_build import (
    FAR_FUTURE,
    GRIDFS_CHUNK,
    LARGE_FILE_BYTES,
    RESET_USERS,
    USER_PASSWORD,
    Docs,
    Gen,
    audit,
    legal,
    people,
    reference_data,
)
from tests.support.dataset_values import CLAUSES, TEMPLATE_NAMES

COLLECTIONS = (
    "organizations",
    "permissions",
    "roles",
    "departments",
    "users",
    "hr_employees",
    "hr_vacation_requests",
    "hr_certification_requests",
    "legal_third_party_types",
    "legal_third_parties",
    "legal_contracts",
    "generated_documents",
    "templates",
    "template_signatories",
    "signatory_types",
    "variable_mappings",
    "content_documents",
    "user_signatures",
    "audit_events",
    "fs.files",
    "fs.chunks",
)


@dataclass(frozen=True)
class DatasetSummary:
    database: str
    counts: dict[str, int]  # documents per collection, all 21
    file_sha256: dict[ObjectId, str]  # GridFS file id -> sha256 of its content
    large_file_id: ObjectId  # the file spanning several chunks
    reset_users: tuple[str, ...] = RESET_USERS
    user_password: str = USER_PASSWORD
    indexes: dict[str, list[str]] = field(default_factory=dict)  # index names we created

    @property
    def total_documents(self) -> int:
        return sum(self.counts.values())


def _documents(g: Gen, data: Docs, scale: int) -> tuple[dict[ObjectId, str], ObjectId]:
    """Templates and generated documents, with their files in GridFS (fs.files/fs.chunks)."""
    files: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    hashes: dict[ObjectId, str] = {}

    def put(filename: str, content: bytes, content_type: str) -> ObjectId:
        # Written by the GridFS spec rather than through GridFSBucket, whose chunk
        # _ids are random; the test suite reads these back with GridFSBucket.
        file_id = g.oid()
        files.append(
            {
                "_id": file_id,
                "length": len(content),
                "chunkSize": GRIDFS_CHUNK,
                "uploadDate": g.when(),
                "filename": filename,
                "metadata": {"content_type": content_type},
            }
        )
        for n, start in enumerate(range(0, len(content), GRIDFS_CHUNK)):
            data = Binary(content[start : start + GRIDFS_CHUNK])
            chunks.append({"_id": g.oid(), "files_id": file_id, "n": n, "data": data})
        hashes[file_id] = hashlib.sha256(content).hexdigest()
        return file_id

    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    users, orgs = data["users"], data["organizations"]
    templates, signatories, mappings = [], [], []
    for i in range(8 * scale):
        name = TEMPLATE_NAMES[i % len(TEMPLATE_NAMES)]
        content = b"PK\x03\x04" + g.rng.randbytes(g.rng.randrange(2_000, 20_000))
        variables = ["nombre", "rut", "fecha", "cargo"]
        template = {
            "_id": g.oid(),
            "name": f"{name} v{i // len(TEMPLATE_NAMES) + 1}",
            "category": g.rng.choice(["legal", "rrhh"]),
            "file_id": put(f"template_{i}.docx", content, docx),
            "variables": variables,
            "version": 1 + i // len(TEMPLATE_NAMES),
            "organization_id": g.pick(orgs),
            "active": True,
            **g.stamps(),
        }
        templates.append(template)
        for pos in range(2):
            signatories.append(
                {"_id": g.oid(), "template_id": template["_id"], "position": pos + 1}
                | {"signatory_type_id": g.pick(data["signatory_types"]), "required": pos == 0}
            )
        for var in variables:
            mappings.append(
                {"_id": g.oid(), "template_id": template["_id"], "variable": var}
                | {"source_path": f"user.{var}", "default": None, "format": "text"}
            )
    large = put("manual_procedimientos.pdf", g.rng.randbytes(LARGE_FILE_BYTES), "application/pdf")
    generated = []
    for i in range(40 * scale):
        doc: dict[str, Any] = {
            "_id": g.oid(),
            "template_id": g.pick(templates),
            "user_id": g.pick(users),
            "status": g.rng.choice(["generated", "sent", "signed"]),
            "data": {"nombre": " ".join(g.name()), "fecha": g.day().date().isoformat()},
            "generated_at": g.when(),
            **g.stamps(),
        }
        if i < 5 * scale:
            pdf = b"%PDF-1.7\n" + g.rng.randbytes(g.rng.randrange(3_000, 30_000))
            doc["file_id"] = put(f"documento_{i}.pdf", pdf, "application/pdf")
            doc["expires_at"] = FAR_FUTURE  # download link; TTL index, never fires in tests
        generated.append(doc)
    employees = data["hr_employees"]
    data["hr_certification_requests"] = [
        {
            "_id": g.oid(),
            "employee_id": g.pick(employees),
            "certificate_type": g.rng.choice(["antiguedad", "renta", "vacaciones"]),
            "purpose": "Trámite bancario",
            "status": g.rng.choice(["pending", "issued"]),
            "generated_document_id": g.pick(generated),
            **g.stamps(),
        }
        for _ in range(15 * scale)
    ]
    data["content_documents"] = [
        {
            "_id": g.oid(),
            "title": f"Acta de reunión {i}",
            "folder": g.rng.choice(["/legal/actas", "/rrhh/politicas", "/gerencia"]),
            "body": " ".join(g.rng.choice(CLAUSES)[1] for _ in range(2)),
            "owner_id": g.pick(users),
            "organization_id": g.pick(orgs),
            "tags": g.rng.sample(["acta", "politica", "interno", "2025"], 2),
            "versions": [{"number": 1, "author_id": g.pick(users), "at": g.when()}],
            **g.stamps(),
        }
        for i in range(25 * scale)
    ]
    data.update(
        templates=templates,
        template_signatories=signatories,
        variable_mappings=mappings,
        generated_documents=generated,
    )
    data["fs.files"], data["fs.chunks"] = files, chunks
    return hashes, large


INDEXES: dict[str, list[IndexModel]] = {
    "organizations": [IndexModel("slug", unique=True)],
    "permissions": [IndexModel("key", unique=True)],
    "roles": [IndexModel("name", unique=True)],
    "users": [
        IndexModel("email", unique=True),
        IndexModel([("organization_id", ASCENDING), ("last_name", ASCENDING), ("first_name", 1)]),
        IndexModel(  # Devise: only real tokens must be unique, not the many nulls
            "reset_password_token",
            unique=True,
            partialFilterExpression={"reset_password_token": {"$type": "string"}},
        ),
    ],
    "hr_employees": [IndexModel("employee_number", unique=True), IndexModel("user_id")],
    "hr_vacation_requests": [
        IndexModel(
            [("approver_id", ASCENDING), ("start_date", ASCENDING)],
            partialFilterExpression={"status": "pending"},
            name="pending_by_approver",
        )
    ],
    "legal_contracts": [
        IndexModel("number", unique=True),
        IndexModel([("third_party_id", ASCENDING), ("status", 1), ("ends_on", DESCENDING)]),
    ],
    "generated_documents": [IndexModel("expires_at", expireAfterSeconds=0)],
    "template_signatories": [IndexModel([("template_id", 1), ("position", 1)], unique=True)],
    "variable_mappings": [IndexModel([("template_id", 1), ("variable", 1)], unique=True)],
    "fs.files": [IndexModel([("filename", ASCENDING), ("uploadDate", ASCENDING)])],
    "fs.chunks": [IndexModel([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)],
    "audit_events": [
        IndexModel([("subject_type", 1), ("subject_id", 1), ("created_at", DESCENDING)]),
        IndexModel([("actor_id", 1), ("created_at", DESCENDING)]),
    ],
}
USERS_VALIDATOR = {"$jsonSchema": {"bsonType": "object", "required": ["email"]}}


def load_seed_dataset(db: Database[Any], *, scale: int = 1, seed: int = 0) -> DatasetSummary:
    """Fill `db` (expected empty) with the application's 21 collections."""
    if scale < 1:
        raise ValueError("scale must be >= 1")
    g = Gen(seed)
    data = reference_data(g)
    people(g, data, scale)
    legal(g, data, scale)
    hashes, large = _documents(g, data, scale)
    audit(g, data, scale)

    db.create_collection("users", validator=USERS_VALIDATOR)
    for name, docs in data.items():
        db[name].insert_many(docs, ordered=False)
    indexes = {name: db[name].create_indexes(models) for name, models in INDEXES.items()}
    counts = {name: db[name].count_documents({}) for name in COLLECTIONS}
    return DatasetSummary(
        database=db.name,
        counts=counts,
        file_sha256=hashes,
        large_file_id=large,
        indexes=indexes,
    )
