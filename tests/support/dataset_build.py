"""Builders for `dataset.py`: deterministic ids, dates, hashes and documents.

Everything comes from one `random.Random(seed)`, so the same seed and scale give the
same bytes (GridFS chunk ids included).
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from decimal import Decimal
from typing import Any

import bcrypt
from bson import Binary, Decimal128, ObjectId

from tests.support.dataset_values import (
    ACTIONS,
    CLAUSES,
    FIRST_NAMES,
    LAST_NAMES,
    PERMISSION_RESOURCES,
    POSITIONS,
    ROLE_NAMES,
    SIGNATORY_TYPES,
    THIRD_PARTY_TYPES,
)

Docs = dict[str, list[dict[str, Any]]]

RESET_USERS = ("hectorneira2005@hotmail.com", "legal@valkyria.com", "admin@valkyria.com")
USER_PASSWORD = "Valkyria-seed-1"  # every seeded user's password (not the reset one)
BCRYPT_COST = 4  # low on purpose: fast to load; the hash format is what matters
GRIDFS_CHUNK = 255 * 1024  # GridFS default chunk size
LARGE_FILE_BYTES = 2 * GRIDFS_CHUNK + 123_457  # three chunks, the last one partial
BASE_TIME = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
FAR_FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)  # TTL index dates that never expire
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _mailbox(text: str) -> str:
    """An e-mail address from a name: lower case ASCII, no spaces ("María José" -> mariajose)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return folded.replace(" ", "").lower()


class Gen:
    """Deterministic ids, dates and hashes from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._oid_seq = 0

    def oid(self) -> ObjectId:
        self._oid_seq += 1
        stamp = int(BASE_TIME.timestamp()) + self._oid_seq
        return ObjectId(stamp.to_bytes(4, "big") + self.rng.randbytes(8))

    def when(self, days: int = 365) -> dt.datetime:
        return BASE_TIME + dt.timedelta(seconds=self.rng.randrange(days * 86400))

    def day(self, days: int = 365) -> dt.datetime:
        return BASE_TIME.replace(hour=0) + dt.timedelta(days=self.rng.randrange(days))

    def stamps(self) -> dict[str, dt.datetime]:
        created = self.when()
        return {"created_at": created, "updated_at": created + dt.timedelta(hours=1)}

    def bcrypt_hash(self, password: str) -> str:
        chars = [self.rng.choice(_BCRYPT_ALPHABET) for _ in range(21)]
        salt = f"$2a${BCRYPT_COST:02d}$" + "".join(chars) + self.rng.choice(".Oeu")
        return bcrypt.hashpw(password.encode(), salt.encode()).decode()

    def money(self, low: int, high: int) -> Decimal128:
        return Decimal128(Decimal(self.rng.randrange(low * 100, high * 100)) / 100)

    def rut(self) -> str:
        n = self.rng.randrange(5_000_000, 99_999_999)
        return f"{n:,}".replace(",", ".") + f"-{self.rng.choice('0123456789K')}"

    def name(self) -> tuple[str, str]:
        return self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)

    def pick(self, docs: list[dict[str, Any]]) -> Any:
        return self.rng.choice(docs)["_id"]


def reference_data(g: Gen) -> Docs:
    permissions = [
        {"_id": g.oid(), "key": f"{res}.{act}", "resource": res, "action": act, **g.stamps()}
        for res in PERMISSION_RESOURCES
        for act in ("read", "create", "update", "destroy")
    ]
    roles = []
    for name in ROLE_NAMES:
        granted = permissions if name == "admin" else g.rng.sample(permissions, 6)
        roles.append(
            {"_id": g.oid(), "name": name, "permission_ids": [p["_id"] for p in granted]}
            | g.stamps()
        )
    return {
        "permissions": permissions,
        "roles": roles,
        "signatory_types": [
            {"_id": g.oid(), "code": code, "name": label, **g.stamps()}
            for code, label in SIGNATORY_TYPES
        ],
        "legal_third_party_types": [
            {"_id": g.oid(), "code": code, "name": label, **g.stamps()}
            for code, label in THIRD_PARTY_TYPES
        ],
    }


def people(g: Gen, data: Docs, scale: int) -> None:
    orgs = [
        {
            "_id": g.oid(),
            "name": f"Valkyria {region}",
            "slug": f"valkyria-{region.lower()}-{i}",
            "tax_id": g.rut(),
            "settings": {"locale": "es-CL", "time_zone": "America/Santiago", "signing": "fea"},
            "active": True,
            **g.stamps(),
        }
        for i, region in enumerate(["Santiago", "Valparaiso"] * scale)
    ]
    departments = [
        {
            "_id": g.oid(),
            "name": dept,
            "code": f"{dept[:3].upper()}-{i}",
            "organization_id": g.pick(orgs),
            **g.stamps(),
        }
        for i, dept in enumerate(["Legal", "RRHH", "Finanzas", "Operaciones", "TI", "Gerencia"])
        for _ in range(scale)
    ]
    roles = {r["name"]: r["_id"] for r in data["roles"]}
    users = []
    for i in range(40 * scale):
        first, last = g.name()
        email = (
            RESET_USERS[i] if i < len(RESET_USERS) else _mailbox(f"{first}.{last}{i}@valkyria.com")
        )
        role = ["admin", "legal", "admin"][i] if i < len(RESET_USERS) else g.rng.choice(ROLE_NAMES)
        signed_in = g.when()
        users.append(
            {
                "_id": g.oid(),
                "email": email,
                "encrypted_password": g.bcrypt_hash(USER_PASSWORD),
                "first_name": first,
                "last_name": last,
                "role_ids": [roles[role]],
                "organization_id": g.pick(orgs),
                "department_id": g.pick(departments),
                "sign_in_count": g.rng.randrange(400),
                "current_sign_in_at": signed_in,
                "last_sign_in_at": signed_in - dt.timedelta(days=g.rng.randrange(1, 30)),
                "current_sign_in_ip": f"10.0.{g.rng.randrange(256)}.{g.rng.randrange(256)}",
                "reset_password_token": None,
                "confirmed_at": BASE_TIME,
                "locale": "es",
                "active": g.rng.random() > 0.1,
                **g.stamps(),
            }
        )
    for dept in departments:
        dept["manager_id"] = g.pick(users)
    employees = [
        {
            "_id": g.oid(),
            "user_id": user["_id"],
            "email": user["email"],  # as HR systems copy it: masking must keep the link
            "full_name": f"{user['first_name']} {user['last_name']}",
            "employee_number": f"E{1000 + i}",
            "position": g.rng.choice(POSITIONS),
            "hire_date": g.day(3000) - dt.timedelta(days=3000),
            "salary": g.money(700_000, 6_000_000),
            "contract_type": g.rng.choice(["indefinido", "plazo_fijo", "honorarios"]),
            "address": {"street": f"Av. Providencia {g.rng.randrange(9999)}", "city": "Santiago"},
            "emergency_contact": {"name": " ".join(g.name()), "phone": "+569" + str(i).zfill(8)},
            **g.stamps(),
        }
        for i, user in enumerate(users[: 30 * scale])
    ]
    data.update(organizations=orgs, departments=departments, users=users, hr_employees=employees)
    data["hr_vacation_requests"] = [
        {
            "_id": g.oid(),
            "employee_id": g.pick(employees),
            "start_date": (start := g.day()),
            "end_date": start + dt.timedelta(days=(days := g.rng.randrange(1, 15))),
            "days": days,
            "status": g.rng.choice(["pending", "approved", "approved", "rejected"]),
            "approver_id": g.pick(users),
            "comments": [{"author_id": g.pick(users), "body": "Aprobado por jefatura"}],
            **g.stamps(),
        }
        for _ in range(40 * scale)
    ]
    data["user_signatures"] = [
        {
            "_id": g.oid(),
            "user_id": user["_id"],
            "kind": g.rng.choice(["drawn", "uploaded"]),
            "image": Binary(b"\x89PNG\r\n\x1a\n" + g.rng.randbytes(600)),
            **g.stamps(),
        }
        for user in users[: 10 * scale]
    ]


def legal(g: Gen, data: Docs, scale: int) -> None:
    users, orgs = data["users"], data["organizations"]
    parties = []
    for i in range(20 * scale):
        first, last = g.name()
        parties.append(
            {
                "_id": g.oid(),
                "name": f"{last} y Asociados SpA {i}",
                "rut": g.rut(),
                "third_party_type_id": g.pick(data["legal_third_party_types"]),
                "contacts": [{"name": f"{first} {last}", "email": _mailbox(f"{first}@{last}.cl")}],
                "address": {"street": f"Calle {last} {g.rng.randrange(999)}", "city": "Santiago"},
                **g.stamps(),
            }
        )
    contracts = []
    for i in range(30 * scale):
        starts = g.day()
        contracts.append(
            {
                "_id": g.oid(),
                "number": f"CTR-2025-{i:05d}",
                "title": f"Contrato de prestación de servicios {i}",
                "third_party_id": g.pick(parties),
                "organization_id": g.pick(orgs),
                "status": g.rng.choice(["draft", "in_review", "signed", "expired"]),
                "amount": g.money(1_000_000, 90_000_000),
                "currency": "CLP",
                "starts_on": starts,
                "ends_on": starts + dt.timedelta(days=365),
                "clauses": [
                    {"number": n + 1, "title": title, "text": text}
                    for n, (title, text) in enumerate(g.rng.sample(CLAUSES, 4))
                ],
                "signatories": [
                    {"user_id": g.pick(users), "role": "representante", "signed_at": g.when()},
                    {"user_id": g.pick(users), "role": "abogado", "signed_at": None},
                ],
                "renewal": {"automatic": g.rng.random() > 0.5, "notice_days": 30},
                "tags": g.rng.sample(["servicios", "arriendo", "confidencial", "ti", "rrhh"], 2),
                **g.stamps(),
            }
        )
    data.update(legal_third_parties=parties, legal_contracts=contracts)


def audit(g: Gen, data: Docs, scale: int) -> None:
    subjects = [
        ("Legal::Contract", "legal_contracts"),
        ("User", "users"),
        ("Template", "templates"),
    ]
    events = []
    for _ in range(200 * scale):
        subject_type, coll = g.rng.choice(subjects)
        events.append(
            {
                "_id": g.oid(),
                "actor_id": g.pick(data["users"]),
                "action": g.rng.choice(ACTIONS),
                "subject_type": subject_type,
                "subject_id": g.pick(data[coll]),
                "changes": {"status": [None, "draft"], "updated_at": [None, g.when()]},
                "ip": f"190.{g.rng.randrange(256)}.{g.rng.randrange(256)}.{g.rng.randrange(256)}",
                "user_agent": "Mozilla/5.0 (Macintosh) Valkyria/1.0",
                "created_at": g.when(),
            }
        )
    data["audit_events"] = events
