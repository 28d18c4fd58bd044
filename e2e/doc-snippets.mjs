// Keeps the code the guides show identical to the example files that
// e2e/guides.mjs runs. In README.md and docs/**/*.md, a fenced block right
// after a marker line
//
//     <!-- example: docs/examples/js/token.mjs -->
//     <!-- example: docs/examples/js/clacks.mjs#websocket -->
//
// must be that file (without its region marker lines), or the region
// between `// #region websocket` and `// #endregion` (`# region` and
// `# endregion` in Python). Run with --write to copy the files into the
// documents instead of checking them.

import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const write = process.argv.includes("--write");
const MARKER = /^<!-- example: (\S+?)(?:#([\w-]+))? -->$/;
const REGION = /^\s*(?:\/\/|#) ?#?region ([\w-]+)\s*$/;
const END_REGION = /^\s*(?:\/\/|#) ?#?endregion\b/;

function markdownFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" ? [] : markdownFiles(path);
    return entry.name.endsWith(".md") ? [path] : [];
  });
}

/** The lines of `file` (relative to the repository), or of one region. */
function excerpt(file, region) {
  const lines = readFileSync(join(root, file), "utf8").replace(/\n$/, "").split("\n");
  if (!region) return lines.filter((l) => !REGION.test(l) && !END_REGION.test(l));
  const start = lines.findIndex((l) => l.match(REGION)?.[1] === region);
  if (start < 0) throw new Error(`${file} has no region ${region}`);
  const end = lines.findIndex((l, i) => i > start && END_REGION.test(l));
  return lines.slice(start + 1, end).filter((l) => !REGION.test(l) && !END_REGION.test(l));
}

const problems = [];
let checked = 0;
let copied = 0;
for (const path of [join(root, "README.md"), ...markdownFiles(join(root, "docs"))]) {
  const lines = readFileSync(path, "utf8").split("\n");
  let changed = false;
  for (let i = 0; i < lines.length; i++) {
    const marker = lines[i].match(MARKER);
    if (!marker) continue;
    const where = `${relative(root, path)}:${i + 1}`;
    const open = i + 1;
    const fence = lines[open]?.match(/^(```+)\w*$/)?.[1];
    const close = fence ? lines.findIndex((l, j) => j > open && l === fence) : -1;
    if (close < 0) {
      problems.push(`${where}: the marker must be followed by a fenced code block`);
      continue;
    }
    let wanted;
    try {
      wanted = excerpt(marker[1], marker[2]);
    } catch (error) {
      problems.push(`${where}: ${error.message}`);
      continue;
    }
    checked += 1;
    const shown = lines.slice(open + 1, close);
    if (shown.join("\n") === wanted.join("\n")) continue;
    if (write) {
      lines.splice(open + 1, close - open - 1, ...wanted);
      changed = true;
      copied += 1;
    } else {
      let line = 0;
      while (shown[line] === wanted[line]) line += 1;
      problems.push(
        `${where}: differs from ${marker[1]}${marker[2] ? `#${marker[2]}` : ""} at its line ${line + 1}:\n` +
          `    shown:   ${shown[line] ?? "(nothing)"}\n    example: ${wanted[line] ?? "(nothing)"}`,
      );
    }
  }
  if (changed) writeFileSync(path, lines.join("\n"));
}

if (problems.length) {
  console.error(`${problems.join("\n")}\n(node e2e/doc-snippets.mjs --write copies the examples in)`);
  process.exit(1);
}
console.log(
  write
    ? `doc-snippets: copied ${copied} of ${checked} code blocks from their example files`
    : `doc-snippets: ${checked} code blocks match their example files`,
);
