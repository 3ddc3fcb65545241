// The one place zod is configured: its tree-shakable zod/mini build, English messages set once.
// Import it as a namespace (`import * as z from '../validation.js'`): named re-exports let the
// bundler keep only the validators in use (tens of KiB instead of the whole library, which a
// socket-activated daemon would otherwise parse before its first reply).
import { config } from 'zod/mini';
import en from 'zod/v4/locales/en.js';

config(en());

export * from 'zod/mini';
