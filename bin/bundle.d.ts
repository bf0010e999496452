// Types of bin/bundle.js (plain JavaScript: it runs before any TypeScript loads).
export declare const BUILD_DIR: string
export declare const BUNDLE_SUBDIR: string
export declare const STAMP_NAME: string
export declare function sourcesFingerprint (root: string): string
export declare function bundleMadeFrom (root: string, fingerprint: string): string | null
export declare function freshBundle (root: string): string | null
