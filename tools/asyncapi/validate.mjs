// Validates an AsyncAPI document with the official parser (@asyncapi/parser, pinned in
// package-lock.json): exit 0 when it has no error-level diagnostic, 1 otherwise, 2 on usage.
// Warnings (the parser's style rules) are printed but do not fail; errors are the spec's rules.
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const path = process.argv[2];
if (!path) {
  console.error('usage: node validate.mjs <asyncapi.yaml>');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, 'utf8'));
const names = { 0: 'error', 1: 'warning', 2: 'info', 3: 'hint' };
for (const d of diagnostics) {
  console.log(`${names[d.severity]} ${d.code} at /${d.path.join('/')}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (document === undefined || errors.length > 0) {
  console.error(`${path}: ${errors.length} error(s); not a valid AsyncAPI document`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()} (${diagnostics.length} diagnostics)`);
