"""text_sets.py: the text datasets of scripts/build_data.py (text in, text out).

Every row comes from text that Debian ships: the English package descriptions of the
archive's index (apt's Translation-en list, fetched by `apt-get update -o
Acquire::Languages=en`), the section of each package (apt's Packages list), and
WordNet's glosses (wordnet-base). sudoku is the one generated set: 4x4 puzzles made by
a solver, each with exactly one solution.

Each builder takes (name, seed, sizes, rng_for) and returns ({split: rows}, info), where
rows are lists of str and info is a dict that goes into the manifest (what was read and
how many candidates there were). A builder raises DataError (passed in by build_data.py)
when a source is missing, naming the file and the package or command that provides it.
Splits never share a source item: train/valid membership is decided by a hash of the
item's key (package name, WordNet synset offset, puzzle solution), not by position, so
adding rows to one split never moves an item into the other.
"""

import glob
import hashlib
import os
import re
import subprocess

APT_LISTS = "/var/lib/apt/lists"
WORDNET_DIR = "/usr/share/wordnet"

# The closed label set of the glue stand-in: archive sections whose packages say, in
# their short description, what they are for. Balanced: each label has the same number
# of rows in each split, so the majority-class baseline is 1/len(GLUE_SECTIONS).
GLUE_SECTIONS = ["games", "science", "sound", "graphics", "net", "admin"]


class _Err(Exception):
    pass


DataError = _Err   # replaced by build_data.py with its own DataError


def _in_valid(key, name, frac_per_mille):
    """A stable split: the item goes to valid when sha256(name/key) falls in the first
    frac_per_mille of the range. Independent of the seed, so that a different seed
    reshuffles rows but never leaks an item across splits."""
    h = hashlib.sha256(("%s/%s" % (name, key)).encode()).digest()
    return int.from_bytes(h[:4], "little") % 1000 < frac_per_mille


def _cat_list(path):
    """The text of one apt list (apt compresses them with lz4; apt-helper decompresses)."""
    try:
        out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path],
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise DataError("%s: cannot read (%s)" % (path, e))
    return out.stdout.decode("utf-8", "replace")


def _records(text):
    """deb822 records as dicts; continuation lines are kept, joined by newlines."""
    for block in text.split("\n\n"):
        rec, key = {}, None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key:
                rec[key] += "\n" + line
            elif ":" in line:
                key, _, val = line.partition(":")
                rec[key] = val.strip()
        if rec:
            yield rec


def _list_file(pattern, hint):
    files = sorted(glob.glob(os.path.join(APT_LISTS, pattern)))
    # The bookworm main list only: the -updates and -security lists repeat packages.
    main = [f for f in files if "_dists_bookworm_main_" in f]
    if not main:
        raise DataError("%s/%s: no such apt list (%s)" % (APT_LISTS, pattern, hint))
    return main[0]


def _clean(s):
    """One line of lowercase ASCII words: descriptions are written for humans (markup
    such as ' .' paragraph breaks and '*' bullets); the model wants plain text."""
    s = s.replace("\t", " ")
    s = re.sub(r"https?://\S+", "", s)
    s = s.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"\s+", " ", s).strip()


def load_descriptions():
    """[(package, short, long_first_paragraph)] from Translation-en, in file order,
    one per Description-md5 (package families share one description)."""
    path = _list_file("*_main_i18n_Translation-en*",
                      "run: apt-get update -o Acquire::Languages=en")
    seen, out = set(), []
    for rec in _records(_cat_list(path)):
        d = rec.get("Description-en")
        md5 = rec.get("Description-md5")
        if not d or md5 in seen:
            continue
        seen.add(md5)
        short, _, body = d.partition("\n")
        # The long description's first paragraph (paragraphs are split by " ." lines).
        para = []
        for line in body.split("\n"):
            line = line.strip()
            if line == ".":
                break
            para.append(line)
        out.append((rec.get("Package", ""), _clean(short), _clean(" ".join(para))))
    return path, out


def load_sections():
    """{package: section} from the Packages list (the section without its area)."""
    path = _list_file("*_main_binary-amd64_Packages*", "run: apt-get update")
    sec = {}
    for rec in _records(_cat_list(path)):
        if "Package" in rec and "Section" in rec:
            sec[rec["Package"]] = rec["Section"].split("/")[-1]
    return path, sec


def _take(rng, items, n, what):
    if len(items) < n:
        raise DataError("%s: only %d candidates, %d wanted" % (what, len(items), n))
    items = items[:]
    rng.shuffle(items)
    return items[:n]


# ---------------------------------------------------------------- gigaword

def build_gigaword(name, seed, sizes, rng_for):
    """Rows: id, src, tgt. src = the first paragraph of a package's long description
    (12-60 words), tgt = its one-line short description (2-12 words)."""
    path, descs = load_descriptions()
    cand = {"train": [], "valid": []}
    for pkg, short, para in descs:
        nw, ns = len(para.split()), len(short.split())
        if not (12 <= nw <= 60 and 2 <= ns <= 12) or not para or not short:
            continue
        cand["valid" if _in_valid(pkg, name, 60) else "train"].append((pkg, para, short))
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        pick = _take(rng_for(split), cand[split], sizes[split], "%s %s" % (name, split))
        rows[split] = [[str(id0 + i), s, t] for i, (_p, s, t) in enumerate(pick)]
    info = {"list": path, "descriptions": len(descs),
            "candidates": {k: len(v) for k, v in cand.items()}}
    return rows, info


# ---------------------------------------------------------------- glue

def build_glue(name, seed, sizes, rng_for):
    """Rows: id, sentence, label. sentence = a package's short description, label = its
    archive section, one of GLUE_SECTIONS; each label equally often in each split."""
    dpath, descs = load_descriptions()
    spath, sec = load_sections()
    by = {"train": {s: [] for s in GLUE_SECTIONS}, "valid": {s: [] for s in GLUE_SECTIONS}}
    seen = set()
    for pkg, short, _para in descs:
        s = sec.get(pkg)
        if s not in GLUE_SECTIONS or len(short.split()) < 2 or short in seen:
            continue
        seen.add(short)   # the same sentence under two labels would be noise
        by["valid" if _in_valid(pkg, name, 100) else "train"][s].append(short)
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        per = sizes[split] // len(GLUE_SECTIONS)
        pairs = []
        for s in GLUE_SECTIONS:
            pairs += [(t, s) for t in _take(rng, sorted(by[split][s]), per,
                                            "%s %s %s" % (name, split, s))]
        rng.shuffle(pairs)
        rows[split] = [[str(id0 + i), t, s] for i, (t, s) in enumerate(pairs)]
    info = {"lists": [dpath, spath], "labels": GLUE_SECTIONS,
            "candidates": {sp: {s: len(v) for s, v in d.items()} for sp, d in by.items()}}
    return rows, info


# ---------------------------------------------------------------- text_infilling

def build_text_infilling(name, seed, sizes, rng_for):
    """Rows: id, text. text = the first paragraph of a long description (8-40 words);
    the preset's mask_ratio=0.3 masks it at training time."""
    path, descs = load_descriptions()
    cand = {"train": [], "valid": []}
    for pkg, _short, para in descs:
        if 8 <= len(para.split()) <= 40:
            cand["valid" if _in_valid(pkg, name, 60) else "train"].append(para)
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        pick = _take(rng_for(split), cand[split], sizes[split], "%s %s" % (name, split))
        rows[split] = [[str(id0 + i), t] for i, t in enumerate(pick)]
    return rows, {"list": path, "candidates": {k: len(v) for k, v in cand.items()}}


# ---------------------------------------------------------------- sudoku

def _sudoku_solutions(grid, limit=2):
    """Count solutions of a 4x4 sudoku (0 = blank), stopping at limit."""
    try:
        i = grid.index(0)
    except ValueError:
        return 1
    r, c = divmod(i, 4)
    br, bc = r // 2 * 2, c // 2 * 2
    used = set(grid[r * 4:r * 4 + 4]) | {grid[k * 4 + c] for k in range(4)} | \
        {grid[(br + a) * 4 + bc + b] for a in range(2) for b in range(2)}
    n = 0
    for v in range(1, 5):
        if v not in used:
            grid[i] = v
            n += _sudoku_solutions(grid, limit - n)
            grid[i] = 0
            if n >= limit:
                break
    return n


def _sudoku_full(rng):
    """A random complete 4x4 grid: a base grid with digits, bands, stacks, rows within
    bands and columns within stacks permuted (this reaches all 288 grids)."""
    base = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    digits = [1, 2, 3, 4]
    rng.shuffle(digits)
    bands = [0, 1]
    rng.shuffle(bands)
    rows = [b * 2 + r for b in bands for r in rng.sample([0, 1], 2)]
    stacks = [0, 1]
    rng.shuffle(stacks)
    cols = [s * 2 + c for s in stacks for c in rng.sample([0, 1], 2)]
    return [digits[base[r][c] - 1] for r in rows for c in cols]


def _sudoku_text(g):
    return " | ".join(" ".join(str(v) for v in g[r * 4:r * 4 + 4]) for r in range(4))


def build_sudoku(name, seed, sizes, rng_for):
    """Rows: id, src, tgt. A 4x4 puzzle ("1 0 3 4 | ..." with 0 for a blank, rows split
    by '|') and its solution; blanks are removed in random order as long as the puzzle
    keeps exactly one solution (checked by the solver), 6-10 blanks. A puzzle goes to
    valid by a hash of its text, so no puzzle is in both splits."""
    rows = {}
    made = {"train": 0, "valid": 0}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        out, seen = [], set()
        while len(out) < sizes[split]:
            sol = _sudoku_full(rng)
            puz = sol[:]
            want = rng.randint(6, 10)
            blanks = 0
            for i in rng.sample(range(16), 16):
                if blanks == want:
                    break
                v, puz[i] = puz[i], 0
                if _sudoku_solutions(puz[:]) == 1:
                    blanks += 1
                else:
                    puz[i] = v
            src = _sudoku_text(puz)
            made[split] += 1
            if src in seen or _in_valid(src, name, 100) != (split == "valid"):
                continue
            seen.add(src)
            out.append([str(id0 + len(out)), src, _sudoku_text(sol)])
        rows[split] = out
    return rows, {"generated": made, "solver": "backtracking, uniqueness checked"}


# ---------------------------------------------------------------- WordNet

_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def load_wordnet():
    """[(offset/pos, words, gloss_definition, [examples])] from WordNet's data.* files."""
    out = []
    for pos in _POS:
        p = os.path.join(WORDNET_DIR, "data." + pos)
        if not os.path.exists(p):
            raise DataError("%s: missing (apt-get install wordnet-base)" % p)
        with open(p, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue   # the license header
                head, _, gloss = line.partition(" | ")
                t = head.split()
                nw = int(t[3], 16)
                words = [t[4 + 2 * k].replace("_", " ").lower() for k in range(nw)]
                parts = [x.strip() for x in gloss.strip().split(";")]
                definition = parts[0]
                ex = [x.strip('"') for x in parts[1:] if x.startswith('"') and x.endswith('"')]
                out.append(("%s/%s" % (t[0], _POS[pos]), pos, words, _clean(definition),
                            [_clean(e) for e in ex]))
    return out


# The tasks of the natural_instruction_v2 stand-in: each (instruction, how to make src
# and tgt from one synset). Three tasks over one source, as Natural Instructions mixes
# many tasks with their own instructions and examples.
def _ni_task(kind, syn):
    _key, pos, words, dfn, ex = syn
    w = words[0]
    if kind == "define":
        return "give the definition of the %s." % pos, w, dfn
    if kind == "name":
        return "which word has this meaning?", dfn, w
    # "use": complete an example sentence that uses the word (only synsets with one)
    return "write an example sentence that uses the %s." % pos, w, ex[0]


def build_natural_instruction_v2(name, seed, sizes, rng_for):
    """Rows: id, instruction, examples, src, tgt. Three WordNet tasks (word ->
    definition, definition -> word, word -> example sentence); examples holds one solved
    example of the same task from another synset ("input: ... output: ...")."""
    syns = [s for s in load_wordnet()
            if 3 <= len(s[3].split()) <= 20 and re.fullmatch(r"[a-z][a-z ]*", s[2][0])]
    cand = {"train": [], "valid": []}
    for s in syns:
        cand["valid" if _in_valid(s[0], name, 30) else "train"].append(s)
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        pool = _take(rng, cand[split], 2 * sizes[split], "%s %s" % (name, split))
        out = []
        for i in range(sizes[split]):
            kinds = ["define", "name"] + (["use"] if pool[i][4] and pool[-1 - i][4] else [])
            kind = rng.choice(kinds)
            ins, src, tgt = _ni_task(kind, pool[i])
            _i2, esrc, etgt = _ni_task(kind, pool[-1 - i])
            out.append([str(id0 + i), ins, "input: %s output: %s" % (esrc, etgt), src, tgt])
        rows[split] = out
    return rows, {"wordnet": WORDNET_DIR, "synsets": len(syns),
                  "candidates": {k: len(v) for k, v in cand.items()}}


# ---------------------------------------------------------------- miscfiles tables

MISC_DIR = "/usr/share/misc"
CITY_COLS = ["name", "country", "region", "population", "latitude", "longitude"]
COUNTRY_COLS = ["name", "capital", "iso2", "iso3", "un_code"]


def _gz_lines(fname):
    import gzip
    p = os.path.join(MISC_DIR, fname)
    if not os.path.exists(p):
        raise DataError("%s: missing (apt-get install miscfiles)" % p)
    with gzip.open(p, "rt", encoding="utf-8", errors="replace") as f:
        return f.read().split("\n")


def load_cities():
    """The City records of miscfiles' cities.dat as dicts of CITY_COLS (lowercase ASCII;
    population an int, coordinates rounded to 0.1 degree). Records without a population,
    a name or a country are left out."""
    out, rec = [], {}
    for line in _gz_lines("cities.dat.gz") + ["//"]:
        if line.startswith("//"):
            if rec.get("type") == "city" and rec.get("population", "").isdigit() \
                    and rec.get("name") and rec.get("country"):
                out.append({"name": rec["name"], "country": rec["country"],
                            "region": rec.get("region") or "-",
                            "population": int(rec["population"]),
                            "latitude": "%.1f" % float(rec.get("latitude") or 0),
                            "longitude": "%.1f" % float(rec.get("longitude") or 0)})
            rec = {}
            continue
        k, _, v = line.partition(":")
        rec[k.strip().lower()] = _clean(v)
    # Names repeat (two Portlands); keep the first of each so a question has one answer.
    seen, uniq = set(), []
    for c in out:
        if c["name"] not in seen and "'" not in c["name"]:
            seen.add(c["name"])
            uniq.append(c)
    return uniq


def load_countries():
    out = []
    for line in _gz_lines("countries.gz"):
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) == 5 and f[4].strip():
            out.append({"un_code": f[0], "iso2": f[1].lower(), "iso3": f[2].lower(),
                        "name": _clean(f[3]), "capital": _clean(f[4])})
    return [c for c in out if c["name"] and "'" not in c["name"] and "'" not in c["capital"]]


SPIDER_SCHEMA = ("cities : %s | countries : %s"
                 % (" , ".join(CITY_COLS), " , ".join(COUNTRY_COLS)))


def _spider_items(cities, countries):
    """(key, question, sql) for every template and entity; key decides the split."""
    items = []
    by_country = {}
    for c in cities:
        by_country.setdefault(c["country"], []).append(c)
    for c in cities:
        n = c["name"]
        items.append((n, "what is the population of %s?" % n,
                      "select population from cities where name = '%s'" % n))
        items.append((n, "which country is %s in?" % n,
                      "select country from cities where name = '%s'" % n))
        items.append((n, "where is %s? give its latitude and longitude." % n,
                      "select latitude , longitude from cities where name = '%s'" % n))
    for k, cs in by_country.items():
        items.append((k, "which cities are in %s?" % k,
                      "select name from cities where country = '%s'" % k))
        items.append((k, "how many cities are in %s?" % k,
                      "select count(*) from cities where country = '%s'" % k))
        items.append((k, "which city in %s has the most people?" % k,
                      "select name from cities where country = '%s' order by population "
                      "desc limit 1" % k))
    for c in countries:
        n = c["name"]
        items.append((n, "what is the capital of %s?" % n,
                      "select capital from countries where name = '%s'" % n))
        items.append((n, "what is the three letter code of %s?" % n,
                      "select iso3 from countries where name = '%s'" % n))
        items.append((c["capital"], "which country has the capital %s?" % c["capital"],
                      "select name from countries where capital = '%s'" % c["capital"]))
    for t in (100000, 500000, 1000000, 2000000, 5000000, 10000000):
        items.append(("pop%d" % t, "which cities have more than %d people?" % t,
                      "select name from cities where population > %d" % t))
    return items


def build_spider(name, seed, sizes, rng_for):
    """Rows: id, src, database, tgt. A question about miscfiles' cities and countries
    tables, the two tables' schema, and the SQL that answers it. The questions come from
    12 templates over the real rows (not written by people, unlike Spider); the entity a
    question names decides its split, so valid asks about cities and countries that no
    training question names."""
    cities, countries = load_cities(), load_countries()
    cand = {"train": [], "valid": []}
    for key, q, sql in _spider_items(cities, countries):
        cand["valid" if _in_valid(key, name, 100) else "train"].append((q, sql))
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        pick = _take(rng_for(split), cand[split], sizes[split], "%s %s" % (name, split))
        rows[split] = [[str(id0 + i), q, SPIDER_SCHEMA, s] for i, (q, s) in enumerate(pick)]
    return rows, {"tables": {"cities": len(cities), "countries": len(countries)},
                  "files": [os.path.join(MISC_DIR, "cities.dat.gz"),
                            os.path.join(MISC_DIR, "countries.gz")],
                  "candidates": {k: len(v) for k, v in cand.items()}}


def build_fetaqa(name, seed, sizes, rng_for):
    """Rows: id, database, src, tgt. database = 3-6 rows of miscfiles' cities table
    linearized ("name | country | population ; row ; ..."), src a question that needs
    the table, tgt a one-sentence answer. Questions and answer sentences are templated
    (FeTaQA's are written by people); the table rows are real. Split by the first city."""
    cities = load_cities()
    cand = {"train": [], "valid": []}
    for c in cities:
        cand["valid" if _in_valid(c["name"], name, 100) else "train"].append(c)
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        out = []
        for i in range(sizes[split]):
            first = rng.choice(cand[split])
            others = rng.sample(cities, rng.randint(2, 5))
            tab = [first] + [c for c in others if c is not first]
            rng.shuffle(tab)
            db = "name | country | population ; " + " ; ".join(
                "%s | %s | %d" % (c["name"], c["country"], c["population"]) for c in tab)
            kind = rng.randrange(3)
            if kind == 0:
                q = "what is the population of %s?" % first["name"]
                a = "%s has a population of %d." % (first["name"], first["population"])
            elif kind == 1:
                q = "which country is %s in?" % first["name"]
                a = "%s is in %s." % (first["name"], first["country"])
            else:
                big = max(tab, key=lambda c: c["population"])
                q = "which city in the table has the most people?"
                a = "%s has the most people, %d." % (big["name"], big["population"])
            out.append([str(id0 + i), db, q, a])
        rows[split] = out
    return rows, {"cities": len(cities), "file": os.path.join(MISC_DIR, "cities.dat.gz"),
                  "candidates": {k: len(v) for k, v in cand.items()}}


def build_dart(name, seed, sizes, rng_for):
    """Rows: id, database, tgt. database = the triples of one city or country of
    miscfiles' tables ("aberdeen | country | uk ; aberdeen | region | scotland ; ..."),
    a random subset of its facts in random order; tgt = a sentence that states exactly
    those facts, from templates (DART's sentences are written by people; the facts here
    are real). Split by entity."""
    ents = []
    for c in load_cities():
        facts = [("country", c["country"]), ("population", str(c["population"]))]
        if c["region"] != "-":
            facts.append(("region", c["region"]))
        ents.append((c["name"], "city", facts))
    for c in load_countries():
        ents.append((c["name"], "country", [("capital", c["capital"]), ("iso code", c["iso3"])]))
    cand = {"train": [], "valid": []}
    for e in ents:
        cand["valid" if _in_valid(e[0], name, 100) else "train"].append(e)
    phrase = {"country": "is in %s", "population": "has a population of %s",
              "region": "is in the region %s", "capital": "has the capital %s",
              "iso code": "has the iso code %s"}
    rows = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        out = []
        for i in range(sizes[split]):
            ent, kind, facts = rng.choice(cand[split])
            fs = rng.sample(facts, rng.randint(1, len(facts)))
            db = " ; ".join("%s | %s | %s" % (ent, k, v) for k, v in fs)
            parts = [phrase[k] % v for k, v in fs]
            text = "%s %s." % (ent, parts[0] if len(parts) == 1 else
                               ", ".join(parts[:-1]) + " and " + parts[-1])
            out.append([str(id0 + i), db, text])
        rows[split] = out
    return rows, {"entities": len(ents), "candidates": {k: len(v) for k, v in cand.items()},
                  "files": [os.path.join(MISC_DIR, "cities.dat.gz"),
                            os.path.join(MISC_DIR, "countries.gz")]}
