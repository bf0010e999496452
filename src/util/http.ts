/**
 * `node:http`, taken without its ES module facade: a module that imports it
 * (`import { createServer } from 'node:http'`) makes Node read every export
 * of it, and one of them loads undici (Node's fetch): 20-30 ms of the start of
 * every process that loads such a module (a `meshwork node`, the approval MCP
 * server), measured on this project's 2-core hosts. Type imports of
 * `node:http` load nothing and stay as they are.
 */
export const http = process.getBuiltinModule('node:http')
