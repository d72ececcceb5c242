// Write Tollgate tools in JavaScript (componentize-js). This is the only module that imports
// the `tollgate:tool` world; everything else is plain JS, unit-tested under node.
//
//   import { defineTool, ToolError, effects, checkpoint, log } from '../../sdk/js/tollgate.js';
//   export const { describe, run } = defineTool({ name, version, description, inputSchema, run(ctx, input) {...} });

import { perform } from 'tollgate:tool/effects@0.1.0';
import { save, get, latest } from 'tollgate:tool/checkpoints@0.1.0';
import { event } from 'tollgate:tool/log@0.1.0';
import { bindHost } from './host.js';

export const { effects, checkpoint, log } = bindHost({ perform, save, get, latest, event });

export { defineTool } from './define.js';
export { Context } from './context.js';
export { ToolError, ERROR_CLASSES } from './error.js';
export { Outcome, Checkpoint } from './host.js';
export { toJson } from './json.js';
