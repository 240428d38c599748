#!/usr/bin/env python3
"""Derives Ward's ATT&CK tables from the corpus (run from the repository root):

    python3 detect/attack/derive.py ../shared/corpora/mitre-attack

Reads the ATT&CK v18.1 STIX attack-pattern objects (mitre/cti @ 421deacb) and the
ATT&CK v19 technique list derived from Atomic Red Team's index (redcanaryco/
atomic-red-team @ 9f85cf3e, objects modified 2026-05-12), the newest release in
the corpus. Writes:

- techniques.tsv: every v19 technique: id, name, v19 tactic short names. Names
  come from MITRE's v18.1 STIX where the technique exists there (Atomic Red Team's
  index renames some), from the v19 list for techniques new in v19.
- moved.tsv: old id -> v19 id, and how the mapping was found:
  `stix-name` / `stix-description` (a revoked v18.1 object whose name, or first
  sentence of description, equals exactly one live technique's), `v19-split`
  (live in v18.1, gone in v19: Impair Defenses and two Indicator Removal
  sub-techniques moved to the new Defense Impairment tactic, Impersonation and
  Email Spoofing under Social Engineering; matched by name by hand),
  `revoked-by` (revoked in v18.1 but the STIX relationship objects that name the
  replacement are not in the corpus: from ATT&CK's published revocation notices),
  `deprecated` (deprecated with a successor named in its description).
  Chains are followed to a v19 id.
"""

import csv
import glob
import json
import os
import sys

V19_SPLIT = {
    "T1562": "T1685",  # Impair Defenses -> Disable or Modify Tools (closest)
    "T1562.001": "T1685",
    "T1562.002": "T1685.001",
    "T1562.003": "T1690",
    "T1562.004": "T1686",
    "T1562.006": "T1685",  # Indicator Blocking -> Disable or Modify Tools (closest)
    "T1562.007": "T1686.001",
    "T1562.008": "T1685.002",
    "T1562.009": "T1688",
    "T1562.010": "T1689",
    "T1562.011": "T1685.003",
    "T1562.012": "T1685.004",
    "T1562.013": "T1686.002",
    "T1070.001": "T1685.005",
    "T1070.002": "T1685.006",
    "T1656": "T1684.001",
    "T1672": "T1684.002",
}

REVOKED_BY = {
    "T1002": "T1560", "T1017": "T1072", "T1022": "T1560", "T1024": "T1573",
    "T1031": "T1543.003", "T1032": "T1573", "T1038": "T1574.001", "T1044": "T1574.010",
    "T1050": "T1543.003", "T1053.001": "T1053.002", "T1058": "T1574.011", "T1065": "T1571",
    "T1073": "T1574.001", "T1077": "T1021.002", "T1079": "T1573", "T1089": "T1562.001",
    "T1094": "T1095", "T1139": "T1552.003", "T1141": "T1056.002", "T1148": "T1562.003",
    "T1150": "T1647", "T1162": "T1547.015", "T1163": "T1037.004", "T1168": "T1053",
    "T1169": "T1548.003", "T1171": "T1557.001", "T1179": "T1056.004", "T1192": "T1566.002",
    "T1193": "T1566.001", "T1196": "T1218.002", "T1206": "T1548.003", "T1547.011": "T1647",
    "T1574.002": "T1574.001",
}

DEPRECATED = {"T1064": "T1059"}  # Scripting -> Command and Scripting Interpreter


def attack_id(o):
    return next(r["external_id"] for r in o["external_references"] if r.get("source_name") == "mitre-attack")


def main(corpus):
    objs = []
    for f in sorted(glob.glob(os.path.join(corpus, "enterprise-attack/attack-pattern/*.json"))):
        objs += [o for o in json.load(open(f))["objects"] if o["type"] == "attack-pattern"]
    live = [o for o in objs if not o.get("revoked") and not o.get("x_mitre_deprecated")]
    v18_name = {attack_id(o): o["name"] for o in live}
    v19 = {}
    with open(os.path.join(corpus, "DERIVED_attack_v19_subset_from_atomic_red_team.csv")) as f:
        for r in csv.DictReader(f):
            v19[r["technique_id"]] = (v18_name.get(r["technique_id"], r["name"]), r["tactics"].replace(";", ","))
    moved = {}
    by_name, by_desc = {}, {}
    first = lambda s: (s or "").split(". ")[0].strip().lower()
    for o in live:
        by_name.setdefault(o["name"].lower(), []).append(attack_id(o))
        by_desc.setdefault(first(o.get("description")), []).append(attack_id(o))
    for o in objs:
        if not o.get("revoked"):
            continue
        old = attack_id(o)
        for how, table, key in (("stix-name", by_name, o["name"].lower()), ("stix-description", by_desc, first(o.get("description")))):
            hits = table.get(key, [])
            if len(hits) == 1 and hits[0] != old:
                moved[old] = (hits[0], how)
                break
    for old, new in REVOKED_BY.items():
        moved.setdefault(old, (new, "revoked-by"))
    for old, new in DEPRECATED.items():
        moved[old] = (new, "deprecated")
    for old, new in V19_SPLIT.items():
        moved[old] = (new, "v19-split")
    # Follow chains to a v19 id.
    final = {}
    for old in moved:
        cur, how, seen = old, moved[old][1], set()
        while cur in moved and cur not in seen and cur not in v19:
            seen.add(cur)
            cur = moved[cur][0]
        if cur in v19 and cur != old:
            final[old] = (cur, how)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "techniques.tsv"), "w") as f:
        f.write("# ATT&CK v19 Enterprise techniques: id, name, tactics (generated by derive.py; see ORIGIN.md)\n")
        for tid in sorted(v19):
            f.write(f"{tid}\t{v19[tid][0]}\t{v19[tid][1]}\n")
    with open(os.path.join(here, "moved.tsv"), "w") as f:
        f.write("# old ATT&CK id, its ATT&CK v19 id, how the mapping was found (generated by derive.py)\n")
        for old in sorted(final):
            f.write(f"{old}\t{final[old][0]}\t{final[old][1]}\n")
    print(f"{len(v19)} techniques, {len(final)} old ids mapped", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpora/mitre-attack")
