// The fake VM lives with the demo tooling (npm start uses it too); tests import it from here.
export * from '../../daemon/demo/fake-vm.ts'
