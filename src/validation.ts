// The one place zod is imported: its tree-shakable zod/mini build, because the full build
// alone costs a socket-activated daemon tens of milliseconds of module loading before its
// first reply. English messages are configured once, here.
import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';

z.config(en());

export { z };
