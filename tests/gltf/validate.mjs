// Validate GLB files with the Khronos glTF validator, one JSON line per file on stdout.
//
//   node tests/gltf/validate.mjs a.glb [b.glb ...]
//
// Each line: {"path", "validatorVersion", "numErrors", "numWarnings", "numInfos", "numHints",
// "errors": [...], "warnings": [...], "infos": [...]}, every issue as {code, message, pointer}.
// A file the validator cannot even open (not glTF/GLB) gets {"path", "fatal": "<reason>"}.
// Exit status: 0 when every file has zero errors, 1 otherwise, 2 on bad arguments.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { validateBytes, version } from "gltf-validator";

// The validator's severity codes (ValidationIssue.severity).
const SEVERITY = { error: 0, warning: 1, info: 2 };

function issuesOf(messages, severity) {
  return messages
    .filter((m) => m.severity === severity)
    .map(({ code, message, pointer }) => ({ code, message, pointer: pointer ?? null }));
}

async function validateFile(path) {
  try {
    const bytes = new Uint8Array(await readFile(path));
    const report = await validateBytes(bytes, {
      uri: basename(path),
      maxIssues: 0, // 0 = report every issue
      // Our GLBs are self-contained: any external reference is itself a failure.
      externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri}`)),
    });
    const { numErrors, numWarnings, numInfos, numHints, messages } = report.issues;
    return {
      path,
      validatorVersion: version(),
      numErrors,
      numWarnings,
      numInfos,
      numHints,
      errors: issuesOf(messages, SEVERITY.error),
      warnings: issuesOf(messages, SEVERITY.warning),
      infos: issuesOf(messages, SEVERITY.info),
    };
  } catch (reason) {
    return { path, validatorVersion: version(), fatal: String(reason) };
  }
}

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate.mjs FILE.glb [FILE.glb ...]");
  process.exit(2);
}
let failed = false;
for (const path of paths) {
  const result = await validateFile(path);
  failed ||= result.fatal !== undefined || result.numErrors > 0;
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
