#!/usr/bin/env node
// Space used by the pool's metadata (an LMDB environment), per database, from LMDB's own page
// counts (mdb_stat -a equivalent): what is in use, as opposed to the data file's size, which also
// counts free pages (pages freed by past transactions, kept for reuse) and pages never used since
// the file last grew. Read-only; safe while the server runs (LMDB allows readers in other
// processes). Used by bench/pool-vs-tgt.sh.
//
//   node bench/pool-lmdb-stats.mjs DATA/pool/meta   → one JSON line
import { statSync } from "node:fs";
import { join } from "node:path";
import { open } from "lmdb";

const path = process.argv[2];
if (!path) {
  console.error("usage: pool-lmdb-stats.mjs <lmdb directory>");
  process.exit(2);
}
const names = [
  "fp",
  "map",
  "journal",
  "dead",
  "volume",
  "domain",
  "container",
  "meta",
  "mapold",
  "mapdeath",
  "snapshot",
];
const root = open({ path, readOnly: true, maxDbs: 16, encoding: "binary", keyEncoding: "binary" });
const rootStats = root.getStats();
const pageSize = rootStats.pageSize;
const dbs = {};
let usedPages = 0;
for (const name of names) {
  const s = root.openDB({ name, encoding: "binary", keyEncoding: "binary" }).getStats();
  const pages = s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
  usedPages += pages;
  dbs[name] = { entries: s.entryCount, pages, bytes: pages * pageSize };
}
// The main DB holds the names of the sub-databases (a page or two).
const mainPages =
  rootStats.treeBranchPageCount + rootStats.treeLeafPageCount + rootStats.overflowPages;
usedPages += mainPages;
// Free pages: the freelist (LMDB's db 0) is reported by lmdb-js as `free`.
const free = rootStats.free ?? {};
const freePages =
  (free.treeBranchPageCount ?? 0) + (free.treeLeafPageCount ?? 0) + (free.overflowPages ?? 0);
const fileBytes = statSync(join(path, "data.mdb")).size;
console.log(
  JSON.stringify({
    pageSize,
    fileBytes,
    usedBytes: usedPages * pageSize,
    lastPageBytes: (rootStats.lastPageNumber + 1) * pageSize,
    freelistEntries: free.entryCount ?? null,
    freelistPages: freePages,
    dbs,
  }),
);
await root.close();
