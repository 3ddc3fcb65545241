// Moved to test/support/user-package.ts; kept only for the files that still import it from here
// until their owners switch.
export { userEval, userPackage, userScript } from '../support/user-package.js';
