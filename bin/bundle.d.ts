// Types of bin/bundle.js (plain JavaScript: it runs before any TypeScript loads).
export declare const BUNDLE_DIR: string
export declare const STAMP_FILE: string
export declare function sourcesFingerprint (root: string): string
export declare function freshBundle (root: string): string | null
