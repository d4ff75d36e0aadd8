#!/usr/bin/env python3
"""Bootstrap the table catalogue from the SMARTSolar API reference.

Run once to produce control-plane/catalogue/tables.json from the spec's "Schema"
section. The JSON file is the source of truth afterwards: corrections are made
there (and listed in docs/decisions.md), and this script is kept only to show
where the first version came from.

    python3 tools/extract_catalogue.py ../shared/spec/smartsolar-api.txt > control-plane/catalogue/tables.json
"""
import json
import re
import sys

FIELD_RE = re.compile(r"^([a-z_0-9]+) ([a-z\-]+(?:\(\d+\))?)(?: \(([^)]*)\))? \|$")
METHODS = ("POST", "GET", "PUT", "DELETE")


def parse(lines):
    end = next(i for i, l in enumerate(lines) if l.strip() == "Product Actions")
    lines = lines[:end]
    starts = [i for i, l in enumerate(lines) if re.match(r"^The [a-z_]+ object$", l)]
    tables = []
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(lines)
        name = lines[start].split()[1]
        # Title is the line(s) before "The x object": a title and an optional description.
        title_idx = start - 1
        description = ""
        if not re.match(r"^[A-Z][A-Za-z ]+$", lines[title_idx]) or lines[title_idx].count(" ") > 6:
            description = lines[title_idx].strip()
            title_idx -= 1
        title = lines[title_idx].strip()
        body = lines[start:stop - 2 if n + 1 < len(starts) else stop]
        columns, rels = [], []
        i = 3
        while i < len(body) and not body[i].startswith("Relationship |"):
            m = FIELD_RE.match(body[i])
            if m:
                col, typ, cons = m.group(1), m.group(2), m.group(3) or ""
                desc = body[i + 1].rstrip(" |").strip() if i + 1 < len(body) else ""
                options = None
                om = re.search(r"options: (\[.*\])", desc)
                if om:
                    options = json.loads(om.group(1))
                    desc = desc[: om.start()].strip()
                max_len = None
                vm = re.match(r"varchar\((\d+)\)", typ)
                if vm:
                    typ, max_len = "string", int(vm.group(1))
                flags = [c.strip() for c in cons.split(",") if c.strip()]
                default = next((f.split("=", 1)[1] for f in flags if f.startswith("default=")), None)
                columns.append({
                    "name": col,
                    "type": {"unknown-type": "string"}.get(typ, typ),
                    "max_len": max_len,
                    "primary_key": "primary key" in flags,
                    "not_null": "not-null" in flags or "primary key" in flags,
                    "unique": "unique" in flags,
                    "foreign_key": "foreign-key" in flags,
                    "default": default,
                    "options": options,
                    "description": desc,
                })
                i += 2
            else:
                i += 1
        i += 2
        while i < len(body) and "|" in body[i] and not body[i].startswith("POST"):
            rel = body[i].split("|")[0].strip()
            if rel and rel != "N/A":
                rels.append(rel)
            i += 1
        methods, paths = {}, []
        text = body
        for j, l in enumerate(text):
            if l.startswith("endpoint | "):
                ep = l[len("endpoint | "):].rstrip(" |")
                k = j
                while k < len(text) and not text[k].startswith("response |"):
                    k += 1
                block = text[j:k + 1]
                meth = next((b.split("|")[1].strip() for b in block if b.startswith("method |")), None)
                perm = next((b.split("|")[1].strip() for b in block if b.startswith("permissions |")), None)
                if meth in METHODS and ep.startswith("/v1/") and perm:
                    methods.setdefault(meth, perm)
                for p in ep.split(" or "):
                    p = p.strip()
                    if p.startswith("/v1/"):
                        paths.append(p[3:])
        collection = sorted({re.sub(r"/<[^>]+>$", "", p) for p in paths})
        id_param = sorted({m.group(1) for p in paths for m in [re.search(r"/<([^>]+)>$", p)] if m})
        tables.append({
            "name": name,
            "title": title,
            "description": description,
            "paths": collection,
            "id_param": id_param[0] if id_param else None,
            "columns": columns,
            "relationships": rels,
            "methods": methods,
        })
    return tables


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.read().split("\n")
    tables = parse(lines)
    json.dump({"tables": tables}, sys.stdout, indent=1)




# ---------------------------------------------------------------------------
# Corrections applied on top of the raw extraction. Each one is a place where
# the spec is silent or contradicts itself; docs/decisions.md lists them.
# ---------------------------------------------------------------------------

FK_TARGETS = {
    "product_imei": "product",
    "battery_part_id": "part",
    "new_part_id": "part",
    "replaced_part_id": "part",
    "added_repair_id": "repair",
    "removed_repair_id": "repair",
    "zero_command_id": "payment_command",
    "battery_type_id": "part_type",
    "sim_part_type_id": "part_type",
    "latest_state_id": "state",
    "latest_enable_history_id": "enable_history",
    "software_lock": "software_version_type",
    "prev_state_type": "state_type",
    "current_state_type": "state_type",
    "channel_name": "channel",
}

META = [
    ("created_at", "datetime", "timestamp that the record was created at"),
    ("created_by", "text", "username of the user who created the record"),
    ("modified_at", "datetime", "timestamp that the record was last modified"),
    ("modified_by", "text", "user that last modified the record"),
]


def col(name, typ, *, pk=False, not_null=False, unique=False, fk=None, options=None,
        max_len=None, default=None, description=""):
    return {"name": name, "type": typ, "max_len": max_len, "primary_key": pk,
            "not_null": not_null or pk, "unique": unique, "foreign_key": fk,
            "default": default, "options": options, "description": description}


def table(name, title, description, paths, columns, methods, relationships=()):
    cols = columns + [col(n, t, description=d) for n, t, d in META]
    return {"name": name, "title": title, "description": description, "paths": paths,
            "id_param": columns[0]["name"] if paths else None, "columns": cols,
            "relationships": list(relationships), "methods": methods}


ENABLE_STATES = ["pending_disabled", "pending_enabled", "init", "enabled", "disabled"]
READ_ONLY = {"GET": "OVERVIEW"}

EXTRA_TABLES = [
    table("user", "User", "API users: permissions and scope (GLOBAL or ENTITY).", ["/users"], [
        col("user_id", "int", pk=True),
        col("username", "string", not_null=True, unique=True),
        col("password", "string", not_null=True,
            description="argon2 hash; write-only: accepted on POST/PUT, never returned"),
        col("permissions", "string", not_null=True,
            options=["OVERVIEW", "TECHNICAL", "ADMIN", "FACTORY", "SYSTEM"]),
        col("user_product_visibility", "string", not_null=True, options=["GLOBAL", "ENTITY"]),
        col("entity_id", "int", fk="entity"),
        col("display_name", "string"),
        col("name", "string"),
        col("hub_id", "int", fk="hub"),
        col("shop_id", "int", fk="shop"),
    ], {"POST": "SYSTEM", "GET": "SYSTEM", "PUT": "SYSTEM", "DELETE": "SYSTEM"}),
    table("product_entity_linker", "Product Entity Linker",
          "Which entities each product is assigned to (written by assign_entity / change_entity / remove_entity).",
          ["/product_entity_linker"], [
              col("product_entity_linker_id", "int", pk=True),
              col("product_imei", "string", not_null=True, fk="product", max_len=15),
              col("entity_id", "int", not_null=True, fk="entity"),
              col("date_added", "datetime"),
              col("date_removed", "datetime"),
          ], READ_ONLY),
    table("tamper_enable_history", "Tamper Enable History",
          "History of the tamper-switch enable state of every product.", ["/tamper_enable_history"], [
              col("tamper_enable_history_id", "int", pk=True),
              col("product_imei", "string", not_null=True, fk="product", max_len=15),
              col("prev_tamper_enable_state", "string", options=ENABLE_STATES),
              col("current_tamper_enable_state", "string", options=ENABLE_STATES),
              col("user", "string"),
              col("date", "datetime"),
          ], {"GET": "OVERVIEW", "DELETE": "SYSTEM"}),
    table("product_group", "Product Group", "Named groups of products.", ["/product_groups"], [
        col("product_group_id", "int", pk=True),
        col("name", "string", not_null=True, unique=True),
        col("description", "string"),
    ], {"POST": "SYSTEM", "GET": "OVERVIEW", "PUT": "SYSTEM", "DELETE": "SYSTEM"}),
    table("part_parameter", "Part Parameter",
          "Parameters set on parts (history kept with statuses, like product_parameter).",
          ["/part_parameters"], [
              col("part_parameter_id", "int", pk=True),
              col("part_id", "int", not_null=True, fk="part"),
              col("parameter_type_id", "int", not_null=True, fk="parameter_type"),
              col("value", "string"),
              col("status", "string", options=["active", "removed", "expired", "pending"]),
              col("date_added", "datetime"),
              col("date_removed", "datetime"),
          ], {"POST": "SYSTEM", "GET": "OVERVIEW", "PUT": "SYSTEM", "DELETE": "SYSTEM"}),
]


def correct(tables):
    names = {t["name"] for t in tables} | {t["name"] for t in EXTRA_TABLES}
    merged = {}
    for t in tables:
        if t["name"] in merged:
            # rtc_dead_letter is documented twice (/v1/rtc_dead_letter and
            # /v1/rtc_dead_letters): one table, both paths, union of columns.
            m = merged[t["name"]]
            m["paths"] = sorted(set(m["paths"]) | set(t["paths"]))
            have = {c["name"] for c in m["columns"]}
            meta = [c for c in m["columns"] if c["name"] in dict((n, 1) for n, _, _ in META)]
            body = [c for c in m["columns"] if c not in meta]
            body += [c for c in t["columns"] if c["name"] not in have]
            m["columns"] = body + meta
            if t["description"]:
                m["description"] = m["description"] or t["description"]
            continue
        merged[t["name"]] = t
    out = list(merged.values())
    for t in out:
        # A sentence ended up as the title where the spec has no separate title line.
        if t["title"].endswith(".") or len(t["title"].split()) > 6 or t["title"] == "RTCDeadLetter":
            t["description"] = t["description"] or t["title"]
            t["title"] = t["name"].replace("_", " ").title()
        if t["name"] == "rtc_dead_letter":
            t["title"] = "Rtc Dead Letter"
        for c in t["columns"]:
            if c["foreign_key"] is True:
                base = c["name"][:-3] if c["name"].endswith("_id") else c["name"]
                for prefix in ("existing_", "replacement_", "old_", "new_"):
                    if base.startswith(prefix) and base[len(prefix):] in names:
                        base = base[len(prefix):]
                target = FK_TARGETS.get(c["name"]) or (base if base in names else None)
                if target is None:
                    raise SystemExit(f"cannot resolve foreign key {t['name']}.{c['name']}")
                c["foreign_key"] = target
            elif c["foreign_key"] is False:
                c["foreign_key"] = None
        # "All records ... have meta-data" (spec: Meta Data), but sms_history
        # lists no modified_by: add whichever meta column a table lacks.
        have = {c["name"] for c in t["columns"]}
        for n, typ, d in META:
            if n not in have:
                t["columns"].append(col(n, typ, description=d))
        if t["name"] == "product":
            # The spec filters on current_tamper_flag and documents the tamper
            # switch actions, but the product table lists no tamper columns.
            i = next(i for i, c in enumerate(t["columns"]) if c["name"] == "desired_enable_flag") + 1
            t["columns"][i:i] = [
                col("current_tamper_flag", "boolean", not_null=True, default="false",
                    description="tamper switch state last confirmed by the unit"),
                col("desired_tamper_flag", "boolean", not_null=True, default="false",
                    description="tamper switch state requested through the API"),
            ]
    return out + EXTRA_TABLES


def main_corrected():
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.read().split("\n")
    tables = correct(parse(lines))
    tables.sort(key=lambda t: t["name"])
    out = ['{"tables": [']
    for n, t in enumerate(tables):
        cols = t.pop("columns")
        head = json.dumps(t, ensure_ascii=False)[:-1]
        out.append(" " + head + ', "columns": [')
        out.append(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cols))
        out.append(" ]}" + ("," if n + 1 < len(tables) else ""))
    out.append("]}")
    print("\n".join(out))


if __name__ == "__main__":
    main_corrected()
